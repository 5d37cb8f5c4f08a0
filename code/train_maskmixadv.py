"""Train MaskMixAdv: the same as ``python code/train.py --method maskmixadv``."""
from train import main

if __name__ == "__main__":
    main(method="maskmixadv")
