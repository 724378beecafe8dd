"""episodic-memory: self-learning episodic memory for AI agents, on Ray."""

from episodic_memory.actors.episode_state import CompletionResult
from episodic_memory.config import (
    CacheConfig,
    FlushPolicy,
    IndexConfig,
    InputLimits,
    LearnerConfig,
    MemoryConfig,
    RateLimitConfig,
    RayConfig,
    StorageConfig,
)
from episodic_memory.core.context import (
    RetrievedContext,
    ScoreBreakdown,
    ScoredEpisode,
    SuggestedTool,
)
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
from episodic_memory.ingest import IngestCheckpoint, IngestReport
from episodic_memory.memory import SelfLearningMemory
from episodic_memory.memory_sync import SyncMemory
from episodic_memory.storage.reconcile import RepairReport

__version__ = "0.1.0"

__all__ = [
    "CacheConfig",
    "CompletionResult",
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
    "FlushPolicy",
    "Heuristic",
    "IndexConfig",
    "IngestCheckpoint",
    "IngestReport",
    "InputLimits",
    "LearnerConfig",
    "MemoryConfig",
    "Pattern",
    "QuotaExceeded",
    "RateLimitConfig",
    "RateLimitExceeded",
    "RayConfig",
    "Reflection",
    "RepairReport",
    "RetrievedContext",
    "RewardScore",
    "SchemaVersionError",
    "ScoreBreakdown",
    "ScoredEpisode",
    "SelfLearningMemory",
    "ServiceError",
    "StorageConfig",
    "StorageError",
    "StoreUnavailable",
    "SuggestedTool",
    "SyncMemory",
    "TaskContext",
    "TaskOutcome",
    "ToolSequence",
    "ValidationError",
    "__version__",
]
