"""xaipipe: targeted background removal and objective interpretability metrics.

Reproduces Nielsen et al., "Targeted Background Removal Creates Interpretable Feature
Visualizations" (ResNet18, PASCAL VOC 2012, four training variants) and evaluates the
explanations with ROAR/KAR, SCG/CCG, undesirable pixels, sanity checks and localisation.
"""

__version__ = "0.1.0"
