from inhouse.cli import main

main()
