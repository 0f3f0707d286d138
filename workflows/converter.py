"""The data converter every Temporal client and worker of this service uses.

Pydantic models (domain.py) travel as JSON; Decimal amounts stay exact.
"""

from temporalio.contrib.pydantic import pydantic_data_converter

data_converter = pydantic_data_converter
