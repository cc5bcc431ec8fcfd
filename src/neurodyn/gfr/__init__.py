"""Generalised firing-rate (GFR) neurons: model, Allen NWB reading, simulation, fitting, dataset, networks."""

from neurodyn.gfr.dataset import df_from_json, load_gfr_model
from neurodyn.gfr.model import GFR, PolynomialActivation, decay_rates

__all__ = ["GFR", "PolynomialActivation", "decay_rates", "df_from_json", "load_gfr_model"]
