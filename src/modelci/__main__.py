from modelci.cli import main

main()
