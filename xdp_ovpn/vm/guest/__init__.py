"""What the guests run (the host side of the harness is xdp_ovpn.vm): modules started as
`python3 -m xdp_ovpn.vm.guest.NAME`, so an installed xdp-ovpn carries them too."""
