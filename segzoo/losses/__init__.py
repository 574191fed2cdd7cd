"""Losses that are not one line of torch."""

from segzoo.losses.kanezaki import continuity_loss, scribble_loss, similarity_loss

__all__ = ["continuity_loss", "scribble_loss", "similarity_loss"]
