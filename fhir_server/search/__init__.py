"""FHIR search: the parameter registry (data), indexing of values, and parsing of queries into conditions.

SQL is built from the parsed conditions in ``fhir_server.store.search_sql``.
"""
