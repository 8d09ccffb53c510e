"""medseg_core: the library behind the medseg review app and its command lines.

Imports without Streamlit. Conventions used everywhere in this package:

* Arrays are ``(Z, Y, X)`` in the closest canonical RAS+ orientation (see
  :mod:`medseg_core.io.orientation`); a 2D image is ``(1, Y, X)``.
* Spacing is in millimetres, in the same axis order as the array.
* Volumes are reported in millilitres, CT intensities in Hounsfield units.
"""

__version__ = "0.1.0"
