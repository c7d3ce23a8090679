"""``defectforge ui``: a local web app (gradio) to tune a method and see its defects change.

Needs the ``ui`` extra (``pip install -e ".[ui]"``); importing this package does not.
"""
