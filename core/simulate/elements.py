"""Chemical elements: symbol <-> atomic number."""

from __future__ import annotations

_SYMBOLS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As "
    "Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd "
    "Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U"
).split()

_Z_OF = {s: i + 1 for i, s in enumerate(_SYMBOLS)}


def atomic_number(symbol: str) -> int:
    """Atomic number of an element symbol (``"Si"`` -> 14).

    Raises ``ValueError`` naming the symbol if it is not an element (H to U).
    """
    try:
        return _Z_OF[symbol]
    except KeyError:
        raise ValueError(f"unknown element symbol {symbol!r}; expected one of H..U, e.g. 'C', 'Si'") from None


def element_symbol(z: int) -> str:
    """Element symbol of an atomic number (14 -> ``"Si"``)."""
    if not 1 <= int(z) <= len(_SYMBOLS):
        raise ValueError(f"atomic number {z} out of range 1..{len(_SYMBOLS)}")
    return _SYMBOLS[int(z) - 1]
