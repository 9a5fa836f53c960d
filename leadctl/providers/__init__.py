"""Providers: one adapter module per provider API (twilio, whatsapp_cloud, zenvia, sendgrid, smtp, webhook,
log) on base.py's Provider interface, made by registry.py. chain.py puts a channel's providers in failover
order, each behind its shared rate limit (ratelimit.py, GCRA in Redis) and circuit breaker (breaker.py);
only the chain uses those two.
"""
