"""Model lifecycle: promotion policy, promote / reject / roll back, audit, retraining."""
