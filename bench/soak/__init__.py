"""`make soak`: hours of steady traffic in minutes: a failover and a restart on the way, memory watched."""
