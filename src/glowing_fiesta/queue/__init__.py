"""The queue between ingress and the writer: put returns once a batch is durable."""
