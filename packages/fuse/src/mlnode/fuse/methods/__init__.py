"""Fusion methods behind one interface (`FusionMethod`), listed in `registry`."""
