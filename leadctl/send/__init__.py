"""Sending: from a claimed lead to a recorded outcome.

worker.py is the asyncio loop of one worker process (read, claim, gate, render, send, record, acknowledge);
supervisor.py runs and watches a pool of them; scheduled.py is `leadctl batch`, the cron run that drains
the queues within a time budget. templates.py renders messages,
segments.py counts SMS segments, heartbeats.py and metrics.py publish what workers do for `ops`.
"""
