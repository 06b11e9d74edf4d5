"""The input topics' events: their ``msgspec`` Structs (:mod:`._structs`, light enough for
:mod:`monitor.emit`) and the JSON Schemas made from the decoders (:mod:`._schemas`).

Nothing is imported here, so that ``monitor.emit`` loads the Structs without the handlers.
"""
