"""The tests' own port picker: a second Ray's `ray start` is refused when two of its components get one port."""

from helpers import free_port


def test_free_port_never_names_a_port_twice_in_one_run():
    # the kernel hands a just-freed port to the next bind now and then; one `ray start` asks for nine ports in a row
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
