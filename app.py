"""grpo-kit app: pick a recipe, run it, watch reward curves live, chat with the trained checkpoint.

    python app.py                    # http://127.0.0.1:7860
    python app.py --port 7861        # another port;  --host 0.0.0.0 serves the network, behind a login
    python app.py --share            # also a public gradio.live link (only when asked), behind a login
    python app.py --host 0.0.0.0 --auth kit:PASSWORD   # choose the login (or KIT_UI_AUTH); else one is printed

Same as `kit ui`. What each tab shows: docs/app.md.
"""

import sys

from kit.app.ui import main

if __name__ == "__main__":
    sys.exit(main())
