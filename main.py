"""python main.py --mode quick|medium|full: the featrank command line, with the config.py beside this file."""
import os, sys
from featrank.cli import main
if __name__ == "__main__":
    sys.exit(main(config=os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.py")))
