"""`python -m actionclip_jax.predict`: a package's `__main__`, so running it does not import the module twice."""
import sys

from actionclip_jax.predict import main

sys.exit(main())
