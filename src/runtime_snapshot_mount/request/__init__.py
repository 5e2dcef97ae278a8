"""The request path: the sub-app, its endpoints, and what they read, check and answer.

``app`` routes a request to an ``endpoint``; the endpoint reads the headers and the ``body``
(under its ``deadline``), validates the ``snapshot`` (``timestamps`` parse its instant),
asks the plugins, and sends one of the ``answers``; ``freshness`` is the stale rule,
``operations`` the request ids, counters and access record, ``openapi`` the document.
"""
