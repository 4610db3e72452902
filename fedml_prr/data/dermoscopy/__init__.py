"""Real dermoscopy datasets, one reader per layout on disk (DATASETS.md sections A-C).

Importing registers ``derm_prr4``, ``derm_prr3``, ``isic2019`` and ``ham10000`` as datasets
(options ``root=`` or ``cache=``, see :mod:`fedml_prr.data.layout`).
"""

from fedml_prr.data.dermoscopy import ham10000, isic2019, prr4  # importing registers the layouts

__all__ = ["ham10000", "isic2019", "prr4"]
