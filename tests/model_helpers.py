"""Helpers for tests that watch what an LFADS model computes."""


def encoder_calls(model):
    """A list that records each encoder run of ``model`` from now on: (encoder name, trials read)."""
    calls, run = [], model._bidirectional

    def recording(prefix, x, *args, **kwargs):
        calls.append((prefix, x.shape[1]))
        return run(prefix, x, *args, **kwargs)

    model._bidirectional = recording
    return calls
