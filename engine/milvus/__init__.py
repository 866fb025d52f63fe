"""Everything Milvus: connection (client), Lite workarounds (lite), the engine-run server (server),
the embedded default (embedded), index types (indexes), the collection (store) and the support probe
(probe). Import from the submodules; this package re-exports nothing so importing it stays cheap.
"""
