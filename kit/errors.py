"""The kit's two user-facing errors, in a module of their own so recipe, data and rewards can all raise them
without importing each other in a circle (kit.recipe re-exports both)."""


class KitError(Exception):
    """A user mistake the kit explains in one line (the CLI prints it without a traceback, exit code 2)."""


class RecipeError(KitError):
    """A recipe (or override) that is wrong: the message names the field, the value and what is allowed."""
