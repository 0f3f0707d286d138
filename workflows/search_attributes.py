"""Custom search attributes that let operators find orders in the Temporal UI."""

from temporalio.common import SearchAttributeKey

ORDER_STATUS = SearchAttributeKey.for_keyword("OrderStatus")
CUSTOMER_NUMBER = SearchAttributeKey.for_keyword("CustomerNumber")
ORDER_TOTAL = SearchAttributeKey.for_float("OrderTotal")

ALL_KEYS = (ORDER_STATUS, CUSTOMER_NUMBER, ORDER_TOTAL)
