"""The model every layer may import, and that imports no other layer: errors, the
verification model, phone numbers, client addresses, codes and the names of Redis keys."""
