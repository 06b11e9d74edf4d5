"""What runs: the Faust application, the Kafka clients, the start-up checks, the local
services and their choice for ``driftgate up``, and the demo producer.

Nothing is imported here: the application imports Faust, which a command that only reads
Redis does not wait for; import the module you need (``monitor.runtime._preflight``).
"""
