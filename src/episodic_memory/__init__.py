"""episodic-memory: self-learning episodic memory for AI agents, on Ray."""

from episodic_memory.config import MemoryConfig
from episodic_memory.core.models import (
    Episode,
    ExecutionStep,
    Reflection,
    RewardScore,
    TaskContext,
    TaskOutcome,
)
from episodic_memory.core.patterns import (
    ContextPattern,
    DecisionPoint,
    ErrorRecovery,
    Heuristic,
    Pattern,
    ToolSequence,
)
from episodic_memory.errors import (
    ConfigurationError,
    DataFolderLocked,
    EpisodeAlreadyCompleted,
    EpisodeNotFound,
    EpisodicMemoryError,
    QuotaExceeded,
    RateLimitExceeded,
    SchemaVersionError,
    ServiceError,
    StorageError,
    StoreUnavailable,
    ValidationError,
)
from episodic_memory.memory import SelfLearningMemory
from episodic_memory.memory_sync import SyncMemory

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "ContextPattern",
    "DataFolderLocked",
    "DecisionPoint",
    "Episode",
    "EpisodeAlreadyCompleted",
    "EpisodeNotFound",
    "EpisodicMemoryError",
    "ErrorRecovery",
    "ExecutionStep",
    "Heuristic",
    "MemoryConfig",
    "Pattern",
    "QuotaExceeded",
    "RateLimitExceeded",
    "Reflection",
    "RewardScore",
    "SchemaVersionError",
    "SelfLearningMemory",
    "ServiceError",
    "StorageError",
    "StoreUnavailable",
    "SyncMemory",
    "TaskContext",
    "TaskOutcome",
    "ToolSequence",
    "ValidationError",
    "__version__",
]
