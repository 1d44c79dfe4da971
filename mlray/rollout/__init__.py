"""Progressive rollout: the controller actor and its analysis of challenger against champion."""
