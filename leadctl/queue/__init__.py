"""The fast transport: Redis Streams with consumer groups, one per channel (and partition).

keys.py names every Redis key (each with its channel's hash tag, so a Redis Cluster takes it as is);
streams.py enqueues, reads, reclaims crashed workers' entries, acknowledges and dead-letters;
deferred.py holds leads until their send window opens; sifting.py passes other campaigns' entries over
for a run of only some campaigns. Entries carry lead ids only: PostgreSQL holds everything else and
can rebuild the queue.
"""
