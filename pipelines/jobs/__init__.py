"""Jobs over stored features: train and apply stackers and recommenders, serve new raw rows."""
