"""The Ray service: thin actor shells over plain classes, and the client that routes to them.

Plain (no Ray; tests and the in-process backend use them directly): ``episode_state``
(one episode), ``episode_host`` (many), ``batching`` (group commit, coalescing), ``pipeline``
(writer, learner), ``index_thread``. Ray shells: ``storage``, ``index``, ``learner``,
``episode`` (hosts and dedicated episode actors). Wiring: ``service`` (names, options,
get-or-create, fault-tolerance policy), ``proxies`` (typed errors back from actors),
``client`` (``RayBackend``).
"""
