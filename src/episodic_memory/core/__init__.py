"""Pure domain logic: models, reward, reflection, learning, ranking, sanitizing. No I/O, no Ray."""
