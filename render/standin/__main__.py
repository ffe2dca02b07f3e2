"""``python -m render.standin --out PATH [--npz]``: write the procedural MANO-format stand-in hand."""
from render.standin.model import main

if __name__ == "__main__":
    main()
