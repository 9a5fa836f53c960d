"""`leadctl webhooks serve`: the providers' delivery receipts and inbound replies, verified and batched."""
