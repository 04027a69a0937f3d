"""The Gradio app: layout (ui), the process that trains (controller), what it shows (views), chat."""
