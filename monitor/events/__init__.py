"""The records driftgate reads and writes, as ``msgspec`` Structs: the input topics' events
(:mod:`._structs`, light enough for :mod:`monitor.emit`; their JSON Schemas are made from
the decoders, in :mod:`monitor.slices._schemas`), the decisions and gate records
(:mod:`._decisions`) and the subjects' views (:mod:`._views`) the worker stores and the
read side shows.

Nothing is imported here, so that ``monitor.emit`` loads the Structs without the handlers.
"""
