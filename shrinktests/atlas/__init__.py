"""The sensitivity atlas: perturb one scope of the reference model at a time, measure the
drift, and suggest a mixed-precision recipe from it."""
