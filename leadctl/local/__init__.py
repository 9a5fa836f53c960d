"""Local tooling, apart from the product: leadctl's embedded Redis and PostgreSQL for a machine that has
neither (services.py), a throwaway Redis Cluster (cluster.py), `leadctl demo`, throwaway namespaces,
and the sandbox provider server (sandbox/): a user-facing fake of every provider's API, for tests,
demos and benchmarks, holding no product logic.
"""
