"""`xdp-ovpn bench`: data paths compared on one namespace topology, within one run.

scenarios (what is compared) -> runner (repetitions, alternating order) -> measure
(iperf3, ping, CPU, RSS) and peers (simulated clients for the scale figures) ->
stats (medians, spread, ratios) -> report (JSON, Markdown) and charts (PNG).
"""
