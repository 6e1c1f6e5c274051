"""The search itself: ``plan`` (what the user asked for, checked and frozen once), ``run`` (the
study loop and the budget), ``trial`` (one trial, top to bottom), ``prune`` (rungs and their
decisions), ``options`` (objectives, samplers, study names), ``workers`` (the other processes of
--workers).
"""
