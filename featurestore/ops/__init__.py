"""Operations on stored versions: consistency checks, drop, diff and drift."""
