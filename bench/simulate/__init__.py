"""`make simulate`: the router's real code in accelerated time, against a world whose truth it must learn."""
