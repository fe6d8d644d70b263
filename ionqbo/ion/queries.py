"""Every GraphQL document ionqbo sends to ION, in one place.

Field names come from ``reference/ion-schema.graphql``. Many of them are marked [R] there
(reconstructed: public ION material does not show them), so they live here and nowhere else:
``tests/test_ion_client.py`` validates every document against the schema file, and
``IonClient.schema_problems()`` (used by ``ionqbo check-mappings``) validates them against the live
ION schema by introspection, so a wrong name is found at set-up, not in the middle of a sync.

Values never appear in these texts: every value travels in ``variables`` (R7). The input fields and
enum values that only appear in variables are listed in :data:`VARIABLE_USES`, so that they are
checked against the schema too.
"""

from __future__ import annotations

from graphql import get_introspection_query

# ---- fragments ---------------------------------------------------------------------------------

# Part: partNumber/revision/description/trackingType [V]; _etag, cost, unitOfMeasure, createdAt,
# updatedAt [R]; isLatestRevision [V] as a filter, [R] as a field.
PART_FIELDS = """
fragment PartFields on Part {
  id
  _etag
  partNumber
  revision
  description
  trackingType
  cost
  unitOfMeasure { id type }
  isLatestRevision
  createdAt
  updatedAt
}
"""

# Purchase order: id/_etag/status/estimatedTotalCost/currency{id}/fees{id} [V]; everything else [R]
# (ion-api.md section 4.4: lines, supplier, address, fee name/value, currency code were NOT FOUND).
PURCHASE_ORDER_FIELDS = """
fragment PurchaseOrderFields on PurchaseOrder {
  id
  _etag
  status
  createdAt
  updatedAt
  estimatedTotalCost
  notes
  currency { id code name }
  supplier { id name }
  shippingAddress { name street1 street2 city state postalCode country }
  fees { id _etag name value }
  purchaseOrderLines {
    id
    _etag
    status
    description
    needDate
    quantity
    unitCost
    totalCost
    expenseCode
    accountingClass
    part { ...PartFields }
  }
}
"""

# ---- queries -------------------------------------------------------------------------------------

PURCHASE_ORDERS = (
    """
query PurchaseOrders(
  $filters: PurchaseOrdersInputFilters
  $sort: [PurchaseOrderSortEnum]
  $first: Int
  $after: String
) {
  purchaseOrders(filters: $filters, sort: $sort, first: $first, after: $after) {
    edges { node { ...PurchaseOrderFields } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
    + PURCHASE_ORDER_FIELDS
    + PART_FIELDS
)

PARTS = (
    """
query Parts($filters: PartsInputFilters, $sort: [PartSortEnum], $first: Int, $after: String) {
  parts(filters: $filters, sort: $sort, first: $first, after: $after) {
    edges { node { ...PartFields } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
    + PART_FIELDS
)

# The same pages with only the keys: read when ION nulled a whole page because one record holds a
# value GraphQL cannot return in a non-null field (a NaN quantity, a null where the schema says `!`;
# GraphQL nulls the nearest nullable parent, here the connection). The keys show which ids the page
# held, so the spoiled records become per-record errors and the others are read by id.
PURCHASE_ORDER_KEYS = """
query PurchaseOrderKeys(
  $filters: PurchaseOrdersInputFilters
  $sort: [PurchaseOrderSortEnum]
  $first: Int
  $after: String
) {
  purchaseOrders(filters: $filters, sort: $sort, first: $first, after: $after) {
    edges { node { id updatedAt } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

PART_KEYS = """
query PartKeys($filters: PartsInputFilters, $sort: [PartSortEnum], $first: Int, $after: String) {
  parts(filters: $filters, sort: $sort, first: $first, after: $after) {
    edges { node { id updatedAt } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

# ion-examples GET_USERS [V]: users(filters: {email: {eq: ...}}).
USERS = """
query Users($filters: UserInputFilters, $first: Int, $after: String) {
  users(filters: $filters, first: $first, after: $after) {
    edges { node { id name email } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

# docs-v3 getting-started [V]: the "who am I" check.
ME = """
query Me {
  me { id name email organization { id domain } }
}
"""

# manual /api/examples/notifications [V]. The one mutation ionqbo sends: never retried.
DISPATCH_NOTIFICATION = """
mutation DispatchNotification($input: DispatchNotificationInput!) {
  dispatchNotification(input: $input) { response { messageId } }
}
"""

# The standard introspection query (graphql-core's, without descriptions: smaller answer).
INTROSPECTION = get_introspection_query(descriptions=False)

# Root field each paged query reads (the connection under `data`).
ROOTS: dict[str, str] = {"PurchaseOrders": "purchaseOrders", "Parts": "parts", "Users": "users",
                         "PurchaseOrderKeys": "purchaseOrders", "PartKeys": "parts"}

# Paged record query -> its keys-only twin (see PURCHASE_ORDER_KEYS).
KEYS: dict[str, str] = {"PurchaseOrders": PURCHASE_ORDER_KEYS, "Parts": PART_KEYS}

# Every document, by operation name: validated in tests and by `schema_problems()`.
ALL: dict[str, str] = {
    "PurchaseOrders": PURCHASE_ORDERS,
    "Parts": PARTS,
    "PurchaseOrderKeys": PURCHASE_ORDER_KEYS,
    "PartKeys": PART_KEYS,
    "Users": USERS,
    "Me": ME,
    "DispatchNotification": DISPATCH_NOTIFICATION,
}

# Input-object fields and enum values that ionqbo puts into `variables` (so they are not in the
# query text and a plain `validate` cannot see them): (type name, field or value name).
VARIABLE_USES: tuple[tuple[str, str], ...] = (
    ("PurchaseOrdersInputFilters", "id"),
    ("PurchaseOrdersInputFilters", "status"),
    ("PurchaseOrdersInputFilters", "updatedAt"),
    ("PurchaseOrderStatusFilter", "in"),
    ("PartsInputFilters", "id"),
    ("PartsInputFilters", "updatedAt"),
    ("UserInputFilters", "email"),
    ("StringFilter", "eq"),
    ("IDFilter", "in"),
    ("IDFilter", "notIn"),
    ("DateTimeFilter", "eq"),
    ("DateTimeFilter", "gt"),
    ("DateTimeFilter", "gte"),
    ("PurchaseOrderSortEnum", "UPDATED_AT_ASC"),
    ("PartSortEnum", "UPDATED_AT_ASC"),
    ("DispatchNotificationInput", "userId"),
    ("DispatchNotificationInput", "notificationType"),
    ("DispatchNotificationInput", "title"),
    ("DispatchNotificationInput", "description"),
    ("NotificationTypeEnum", "WARNING"),
)
