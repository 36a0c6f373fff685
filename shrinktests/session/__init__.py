"""The run as one object: :class:`~shrinktests.session.session.ShrinkSession`, a façade over
the inputs, the compressed variants, the stored reference, the accepted state and the atlas.
The pytest plugin and the command both drive it; the report reads it."""
