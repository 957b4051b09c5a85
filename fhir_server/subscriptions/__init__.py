"""Topic-based subscriptions (Subscriptions R5 Backport on R4): topics as data, the events a write queues,
notification Bundles and the worker that sends them."""
