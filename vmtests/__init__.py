"""Guest-side scripts of the VM harness (the harness itself is xdp_ovpn.vm)."""
