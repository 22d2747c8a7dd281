"""Evaluation: ROAR/KAR/ROAD, SCG/CCG confidence gain, localisation."""
