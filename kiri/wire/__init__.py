"""The wire: the records stages exchange, the stage loop that reads and writes them, and the text
people see of them. Imports nothing else of KIRI's."""
