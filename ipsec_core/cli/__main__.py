from ipsec_core.cli import main

main()
