"""The only code that talks to ArcticDB."""
