"""Operations beside the pipe: what an operator watches and repairs.

stats.py gathers the figures (queues, outcomes, rates, latency, workers, spend) that dashboard.py draws
live and prometheus.py serves; alerts.py fires on them; cost.py prices them; plan.py sizes a fleet from
a measured benchmark; recovery.py replays dead letters, settles leads in doubt and rebuilds lost
queues from PostgreSQL; prune.py deletes finished leads in batches.
"""
