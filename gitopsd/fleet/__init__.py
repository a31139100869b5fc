"""Live side of the data flow: agents' inventories (LiveState) and the calls that change them."""
